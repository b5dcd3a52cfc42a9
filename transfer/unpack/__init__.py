"""Unpacking the archive safely and finding its class folders."""
