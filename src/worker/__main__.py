"""`python -m worker`: how the server's CLI (`geopera worker`) and the demo start a worker."""

import sys

from worker.main import main

sys.exit(main())
