"""python -m rankflow search|sweep|recommend ... (or the simulator's own arguments)."""

import sys

from rankflow.tool import main

sys.exit(main())
