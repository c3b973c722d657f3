"""The one `rgw-inference` console script and its command groups."""
