"""The compiled part of medsec: v1 identification's key loop (services/auth/_keyscan.c).

Optional: without a C compiler, Python headers or OpenSSL's headers, the install goes on and
services/auth/identify.py runs the same loop in Python (about ten times slower).
Everything else is declared in pyproject.toml.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("services.auth._keyscan", ["services/auth/_keyscan.c"],
                             libraries=["crypto"], optional=True)])
