import gc
import sys

from server.cli import main

# A hub holds many long-lived objects (open streams, their tasks, cached
# messages). At the default gen-0 threshold of 700 allocations the collector
# ran every few writes and showed up as a fifth of the fan-out profile.
gc.set_threshold(50_000, 20, 10)

sys.exit(main(sys.argv[1:]))
