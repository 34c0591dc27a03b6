"""Ed25519 keys for signing cache manifests (the ``cryptography`` library: no crypto of our own).

Key files are one line of text: ``sitedist-ed25519-public NAME BASE64`` (32 raw bytes) for the public
key a config trusts, ``sitedist-ed25519-secret NAME BASE64`` (the 32-byte seed, file mode 0600) for the
key ``cache push --key`` signs with. What is signed is the manifest's canonical JSON (sorted keys, no
spaces, ASCII), so any change to any field breaks the signature.
"""

import base64
import binascii
import json
import os

from sitedist.errors import CacheError

PUBLIC, SECRET = "sitedist-ed25519-public", "sitedist-ed25519-secret"


def canonical(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def keygen(name, directory):
    """Write NAME.pub and NAME.key into ``directory``; returns their paths. Refuses to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise CacheError(f"key name {name!r}: use a plain name without spaces or '/' (e.g. site-2026)")
    os.makedirs(directory, exist_ok=True)
    pub_path, key_path = os.path.join(directory, f"{name}.pub"), os.path.join(directory, f"{name}.key")
    for path in (pub_path, key_path):
        if os.path.lexists(path):
            raise CacheError(f"{path} exists; nothing was written (remove it or choose another name)")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{SECRET} {name} {base64.b64encode(seed).decode()}\n")
    with open(pub_path, "x") as f:
        f.write(f"{PUBLIC} {name} {base64.b64encode(raw_pub).decode()}\n")
    return pub_path, key_path


def _read(path, kind):
    try:
        with open(path, encoding="ascii") as f:
            fields = f.read().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise CacheError(f"cannot read key file {path}: {exc}") from None
    try:
        if len(fields) != 3 or fields[0] != kind:
            raise ValueError
        raw = base64.b64decode(fields[2], validate=True)
        if len(raw) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise CacheError(f"{path} is not a {kind} key file (made by 'sitedist cache keygen'); expected one line "
                         f"'{kind} NAME BASE64'") from None
    return fields[1], raw


def load_secret(path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    name, raw = _read(path, SECRET)
    return name, Ed25519PrivateKey.from_private_bytes(raw)


def load_public(path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, raw = _read(path, PUBLIC)
    return name, Ed25519PublicKey.from_public_bytes(raw)


def sign(manifest, secret):
    name, key = secret
    return {"key": name, "signature": base64.b64encode(key.sign(canonical(manifest))).decode()}


def verify(manifest, signatures, trusted):
    """The name of the trusted key (name, public key) that signed ``manifest``, else None."""
    from cryptography.exceptions import InvalidSignature

    message = canonical(manifest)
    for sig in signatures or []:
        if not isinstance(sig, dict) or not isinstance(sig.get("signature"), str):
            continue
        try:
            raw = base64.b64decode(sig["signature"], validate=True)
        except (ValueError, binascii.Error):
            continue
        for name, key in trusted:
            try:
                key.verify(raw, message)
                return name
            except InvalidSignature:
                continue
    return None
