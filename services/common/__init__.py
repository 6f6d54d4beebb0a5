"""Pure codecs and small helpers shared by every medsec service."""
