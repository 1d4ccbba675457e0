"""``python -m amqpd``: the same as the ``amqpd`` command."""

import sys

from amqpd.cli import main

sys.exit(main())
