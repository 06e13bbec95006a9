"""policies: decisions as data. Who may write to whom, sizes, attachments, rates.

Every decision carries its SMTP reply (code, enhanced code, a sentence a human
understands). Functions here are pure: what they need to know about the parties
is handed to them (``Party``), they perform no I/O and import no storage.
"""

from policies.decision import Decision
from policies.parties import Party, Role, Status
from policies.reply import Reply
from policies.sending import may_send

__all__ = ["Decision", "Party", "Reply", "Role", "Status", "may_send"]
