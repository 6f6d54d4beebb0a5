"""Fake `micropython`: const() is the identity."""


def const(x):
    return x
