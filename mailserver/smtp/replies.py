"""The SMTP engine's own replies, as values (the policy refusals live in ``policies/reply.py``).

Each names its RFC: RFC 5321 (codes), RFC 3463 / RFC 5248 (enhanced codes),
RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 3461 (DSN), RFC 7372 (DKIM codes).
"""

from __future__ import annotations

import re

from policies.reply import Reply

# --- accepted ---------------------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
RESET = Reply(250, "2.0.0", "Reset: the transaction is cleared")
NOOP = Reply(250, "2.0.0", "OK, nothing done")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot verify the address; send the message and delivery will be attempted")

# --- sequence and syntax (X.5.X) ------------------------------------------------------------------------------
NEED_EHLO = Reply(503, "5.5.1", "Say EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL FROM before RCPT TO")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT TO before DATA")
NESTED_MAIL = Reply(503, "5.5.1", "A transaction is already open: finish it or send RSET")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 2920 §3.1
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
TLS_ALREADY = Reply(503, "5.5.1", "TLS is already active")
AUTH_NOT_HERE = Reply(503, "5.5.1", "AUTH is not offered on this port: operators authenticate with their certificate")
AUTH_NOT_DURING_MAIL = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA (no argument)")
BAD_PARAMETER = Reply(555, "5.5.4", "Parameter not recognised or not implemented")
BAD_SENDER_SYNTAX = Reply(501, "5.1.3", "Malformed sender address: expected <name@domain>, or <> for a bounce")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Malformed recipient address: expected <name@domain>")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognised authentication mechanism: use PLAIN or LOGIN")
AUTH_SYNTAX = Reply(501, "5.5.2", "Cannot decode the authentication data (base64 expected)")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
EIGHTBIT_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "A non-ASCII address needs the SMTPUTF8 parameter")

# --- security (X.7.X) --------------------------------------------------------------------------------------------
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required: log in with AUTH PLAIN or AUTH LOGIN")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
#: a login refused unchecked by a lockout (``directory.limits``); the text says for how long
LOCKED_OUT = Reply(454, "4.7.0", "Too many failed logins: try again later")
#: a connection refused by a cap on open connections (``directory.limits.ConnectionCaps``)
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address: try again later")
#: an AUTH refused because the account has too many open connections (the session stays open)
ACCOUNT_CONNECTIONS = Reply(454, "4.7.0", "Too many open connections to this account: close one and try again")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available: try again later")
RELAY_DENIED = Reply(
    550, "5.7.1", "Relaying denied: this MX only accepts mail for its own domains; send through your operator"
)
DKIM_REQUIRED = Reply(
    550, "5.7.20", "No valid DKIM signature from the sender's domain, which the trust space lists as signing"
)
DKIM_TEMPFAIL = Reply(451, "4.7.5", "The sender's DKIM key cannot be checked just now: try again later")

# --- mail system (X.3.X, X.4.X, X.5.3, X.6.X) -----------------------------------------------------------------
#: a large DATA could not go on to its spool file (``smtp.dataspool``: the disk full, the directory gone)
SPOOL_FAILURE = Reply(451, "4.3.1", "The server could not keep the message for processing: try again later")
STORAGE_FAILURE = Reply(451, "4.3.0", "Temporary storage failure: the message was not accepted, try again later")
TLS_FAILED = Reply(454, "4.7.0", "TLS negotiation failed: TLS 1.2 or newer with the MSSanté suites is required")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients for one message: send the rest in another")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops: the message looks like it is looping")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long: lines in a message are limited to 1000 octets (RFC 5321)")
BARE_LINEFEED = Reply(
    554, "5.6.0", "Bare CR or LF in the message: lines must end with CRLF (RFC 5321 section 2.3.8); message refused"
)
# RFC 2045 §2.7-2.8 and RFC 6152 §2: 7bit and 8bit data hold no NUL; RFC 5322 §4.1 keeps NUL to obsolete syntax;
# BINARYMIME (RFC 3030), which could carry it, is not offered
NUL_IN_DATA = Reply(
    554, "5.6.0", "NUL octets in the message: mail text cannot carry them; encode the content (base64) and send again"
)
CONTROL_IN_PARAMETER = Reply(501, "5.5.4", "Parameter value holds control characters (CR, LF, NUL...): refused")
SLOW_COMMAND = Reply(421, "4.4.2", "Command line not completed in time: closing the connection")
SLOW_DATA = Reply(421, "4.4.2", "Message data arriving too slowly: closing the connection")
CLIENT_KEY_TYPE = Reply(
    550, "5.7.1", "Client certificate key type not accepted here: the trust space profile asks for RSA certificates"
)
NOT_ACCEPTED_FOR_ANYONE = Reply(550, "5.7.1", "The message was refused for every recipient")


def error_fields(exc: BaseException) -> dict[str, str]:
    """What a log line may say about an unexpected error: its type and the first line of its message
    (a database error's later lines quote SQL parameters: sealed bodies, wrapped keys, addresses)."""
    first = (str(exc).splitlines() or [""])[0]
    return {"error_type": type(exc).__name__, "error": first[:200]}


def message_too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message too big: the limit here is {limit} bytes")


def accepted(message_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Message accepted, id {message_id}")


# --- enhanced status codes on replies the engine makes itself (RFC 2034 §3) -------------------------------------
#: a reply line that already carries an enhanced status code
_HAS_ENHANCED = re.compile(r"\A[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?: |\Z)")
#: the enhanced code for a basic code, when aiosmtpd's text has none (RFC 3463 §3.x, RFC 5248)
DEFAULT_ENHANCED: dict[int, str] = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}


def with_enhanced_code(line: str) -> str:
    """``line`` with an enhanced status code after its basic code, if it is a 2xx/4xx/5xx reply without one."""
    if len(line) < 3 or not line[:3].isdigit() or line[0] not in "245" or _HAS_ENHANCED.match(line):
        return line
    code = int(line[:3])
    enhanced = DEFAULT_ENHANCED.get(code, f"{line[0]}.0.0")
    sep = line[3:4] or " "
    rest = line[4:]
    # aiosmtpd writes "Error: ..." in several texts; the code already says so
    if rest.startswith("Error: "):
        rest = rest[len("Error: ") :]
    return f"{line[:3]}{sep}{enhanced} {rest}".rstrip()
