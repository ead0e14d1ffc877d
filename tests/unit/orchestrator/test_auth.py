import pytest

from orchestrator.auth import KeyStore, bearer_token


def test_only_configured_keys_are_valid():
    keys = KeyStore.from_csv(" alpha, beta ,,")
    assert len(keys) == 2
    assert keys.is_valid("alpha") and keys.is_valid("beta")
    assert not keys.is_valid("gamma") and not keys.is_valid("") and not keys.is_valid("alpha ")


def test_keys_are_not_kept_in_clear():
    keys = KeyStore(["secret-key"])
    assert "secret-key" not in repr(vars(keys))


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), ("", None), (None, None)],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token
