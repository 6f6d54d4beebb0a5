"""`python -m services.auth`: the decrypt service on the auth socket."""
import sys

from services.auth.server import main

sys.exit(main())
