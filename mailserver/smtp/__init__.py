"""SMTP front end on aiosmtpd: MX for operators, submission for professionals, outbound queue and relay."""
