"""The four papers as pipelines built from mechvalue's core modules."""
