"""Internal CA for `tls.mode: internal-ca`.

The CA lives in the site folder (`pki/ca.key`, 0600) and is made once. Each inference host gets a
server certificate signed by it, made here on the control node so the result is reviewable and the
hosts need no CA tooling. Private keys stay in the site folder; the bundle only names their paths.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from toolkit.errors import RenderError

CA_DAYS = 3650
HOST_DAYS = 397  # what browsers and most TLS clients still accept for a leaf certificate
RENEW_BEFORE = dt.timedelta(days=30)  # re-issue on render when this close to expiry


def ensure_ca(pki_dir: Path, *, name: str = "selfhost internal CA") -> tuple[Path, Path]:
    """(ca.crt, ca.key) in `pki_dir`; created on first use and reused afterwards."""
    crt, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if crt.exists() and key_path.exists():
        _load_cert(crt)  # fail early on a damaged file
        return crt, key_path
    if crt.exists() or key_path.exists():
        raise RenderError(f"{pki_dir}: only one of ca.crt / ca.key exists",
                          fix="restore the missing file, or remove both to create a new CA (clients must then trust it again)")
    pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds private keys
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_secret(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def ensure_host_cert(pki_dir: Path, host: str, sans: list[str]) -> tuple[Path, Path]:
    """(crt, key) for `host` under `pki_dir/hosts/`; reused while valid for the same SANs and CA."""
    ca_crt_path, ca_key_path = ensure_ca(pki_dir)
    ca_cert = _load_cert(ca_crt_path)
    out = pki_dir / "hosts"
    crt, key_path = out / f"{host}.crt", out / f"{host}.key"
    if crt.exists() and key_path.exists() and _still_good(_load_cert(crt), ca_cert, sans):
        return crt, key_path
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=HOST_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    _write_secret(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def sans_for(host: str, address: str | None) -> list[str]:
    """Names a client may use for this host: inventory name, its address, and loopback."""
    names = [host, address or host, "127.0.0.1", "localhost"]
    return list(dict.fromkeys(names))  # keep order, drop duplicates


def _still_good(cert: x509.Certificate, ca_cert: x509.Certificate, sans: list[str]) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, Exception):  # wrong CA or malformed
        return False
    wanted = {_general_name(s) for s in sans}
    return set(have) == wanted and cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise RenderError(f"{path}: not a PEM certificate ({exc})") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes) -> None:
    # Created 0600 from the start: never world-readable, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
