"""`python -m geopera_kernel.worker`: how the server's CLI (`geopera worker`) and the demo start a worker."""

import sys

from geopera_kernel.worker.main import main

sys.exit(main())
