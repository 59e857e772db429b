# Puts the `quickstart` package on sys.path when running pytest from this folder without
# installing it. An installed project does not need this file.
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
