"""``MailSender`` over SMTP (stdlib smtplib in a worker thread); STARTTLS and login when configured.
A permanent refusal of the message (5xx for its recipients or its data) is ``MailRejected``; anything
else (no connection, timeouts, 4xx) is ``Unavailable`` and worth another try. Errors name the
server and the SMTP code, never the message."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from application.identity.ports import MailMessage, MailRejected
from domain.errors import Unavailable

__all__ = ["SmtpMailSender"]


class SmtpMailSender:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._username = username
        self._password = password
        self._timeout = timeout

    async def send(self, message: MailMessage) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{message.id}@lumina>"
        mail.set_content(message.body)
        try:
            await asyncio.to_thread(self._send, mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            if all(code >= 500 for code in codes):
                raise MailRejected(f"smtp {self._host}:{self._port}: recipient refused ({codes})") from exc
            raise Unavailable(f"smtp {self._host}:{self._port}: recipient deferred ({codes})") from exc
        except smtplib.SMTPResponseException as exc:
            # a refused login or sender address is the configuration's fault: every message would
            # fail alike, so they stay queued until it is fixed
            configuration = isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused))
            if exc.smtp_code >= 500 and not configuration:
                raise MailRejected(f"smtp {self._host}:{self._port}: refused ({exc.smtp_code})") from exc
            raise Unavailable(f"smtp {self._host}:{self._port}: {type(exc).__name__} ({exc.smtp_code})") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise Unavailable(f"smtp {self._host}:{self._port}: {type(exc).__name__}") from exc

    def _send(self, mail: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
            if self._starttls:
                smtp.starttls()
            if self._username:
                smtp.login(self._username, self._password)
            smtp.send_message(mail)
