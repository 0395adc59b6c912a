"""Encryption at rest for message content (pynacl SecretBox).

Each sealed row records the id of the key that sealed it. New rows are sealed with the
active key; old rows open with whichever configured key they name, so a key can be
rotated by adding a new one, making it active, and keeping the old one until every row
has been re-sealed.
"""

from __future__ import annotations

from collections.abc import Mapping

import nacl.exceptions
import nacl.secret

from gateway.errors import StoreError, UnknownEncryptionKey

KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE


class ContentCipher:
    def __init__(self, keys: Mapping[str, bytes], active_key: str) -> None:
        if active_key not in keys:
            raise UnknownEncryptionKey(f"active key {active_key!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != KEY_SIZE:
                # the key's value is never shown, only its id and size
                raise StoreError(f"encryption key {key_id!r} must be {KEY_SIZE} bytes, "
                                 f"not {len(key)}")
        self._boxes = {key_id: nacl.secret.SecretBox(key) for key_id, key in keys.items()}
        self.active_key = active_key

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypts under the active key (a fresh random nonce is part of the output)."""
        return bytes(self._boxes[self.active_key].encrypt(plaintext))

    def open(self, key_id: str, ciphertext: bytes) -> bytes:
        box = self._boxes.get(key_id)
        if box is None:
            raise UnknownEncryptionKey(f"no configured encryption key has id {key_id!r}")
        try:
            return bytes(box.decrypt(ciphertext))
        except nacl.exceptions.CryptoError as exc:
            raise StoreError(f"stored content does not open with key {key_id!r}") from exc
