"""TOTP (RFC 6238) with pyotp; the enrolment QR code as SVG with segno."""

from __future__ import annotations

import io
from datetime import datetime

import pyotp
import pyotp.utils
import segno

__all__ = ["PyOtpTotp"]


class PyOtpTotp:
    """``TotpEngine``: 6 digits, 30 s steps, SHA-1 (what authenticator apps support), ±1 step."""

    def __init__(self, *, window: int = 1) -> None:
        self._window = window

    def new_secret(self) -> str:
        return pyotp.random_base32(32)  # 160 bits

    def provisioning_uri(self, secret: str, account: str, issuer: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)

    def qr_svg(self, uri: str) -> str:
        out = io.BytesIO()
        segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
        return out.getvalue().decode()

    def match(self, secret: str, code: str, at: datetime) -> int | None:
        totp = pyotp.TOTP(secret)
        if len(code) != totp.digits or not code.isdigit():
            return None
        now = totp.timecode(at)
        found = None
        for timecode in range(now - self._window, now + self._window + 1):
            if pyotp.utils.strings_equal(totp.generate_otp(timecode), code):
                found = timecode
        return found
