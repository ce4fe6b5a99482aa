import sys

from rl_lab.run import main

sys.exit(main())
