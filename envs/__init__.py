"""Task table, Gymnasium helpers, toy envs for tests and the text environment."""

from envs.toy import register_toy_envs

register_toy_envs()
