"""Fetching the archive: an http(s) URL, a file:// URL or a local path, as stored, resumable, checked."""
