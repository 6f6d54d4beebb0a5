# Runs at boot. Everything lives in lib/ (compiled to .mpy by `make firmware`).
import sys

sys.path.append("/lib")

import machine  # noqa: E402

import app  # noqa: E402

try:
    app.main()
except Exception as e:  # a crash must not leave a patient's sensor silent: log and restart
    sys.print_exception(e)
    machine.reset()
