"""``python -m resnets.train ...`` (for torchrun): the same as ``resnets train ...``."""

import sys

from ..cli import app

app(["train", *sys.argv[1:]], prog_name="resnets.train")
