"""`python -m broker_bridge …` is `hcp-bridge …` (for a checkout without `pip install`)."""

import sys

from broker_bridge.cli import main

sys.exit(main())
