"""``python -m data.synthetic --kind voc|cityscapes|cifar10 --root DIR ...`` (see data/synthetic/__init__.py)."""
import sys

from data.synthetic.cli import main
from utils.errors import run_cli

sys.exit(run_cli(main))
