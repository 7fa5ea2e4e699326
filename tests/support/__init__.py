"""Helpers for the end-to-end tests that conftest.py does not provide."""

import pytest

# The helpers assert; let pytest explain their failures as it does in tests.
pytest.register_assert_rewrite("support.differential", "support.raw_client", "support.server_process", "support.process_limit")
