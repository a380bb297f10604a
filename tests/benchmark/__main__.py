import sys

from tests.benchmark.harness import main

sys.exit(main())
