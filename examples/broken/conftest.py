# Puts this folder and the quickstart package on sys.path for `pytest --ckpt-roundtrip` here.
import pathlib
import sys

here = pathlib.Path(__file__).parent
sys.path[:0] = [str(here), str(here.parent / "quickstart")]
