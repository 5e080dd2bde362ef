"""The CXRL trainer service."""
