"""``python -m onnxloss``: the same as the ``onnxloss`` command."""

import sys

from .cli import main

sys.exit(main())
