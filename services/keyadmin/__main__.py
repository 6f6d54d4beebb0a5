"""`python -m services.keyadmin`: the key-admin HTTP API."""
import sys

from services.keyadmin.app import main

sys.exit(main())
