import os

from hypothesis import settings

pytest_plugins = ["pytester"]

# Our own suite runs the derandomized, bounded profile in CI (registered by pytest-ckpt's
# hypothesis entry point); users choose theirs with --hypothesis-profile.
if os.environ.get("CI") == "true":
    settings.load_profile("ckpt-ci")
