"""``python -m sozu_runtime.worker --id N --fd FD``: a worker process (started by the main one)."""

import sys

from .process import main

sys.exit(main())
