"""The service layer: what the API and the CLI both do, in one place.

Each function takes a database session, the principal acting (the CLI acts as the machine's operator,
studio.accounts.OPERATOR) and, where it needs the deployment, the runtime. It checks who may (studio.access), asks
the rules (studio.admission), writes and records the audit event, and refuses with studio.errors.Refused, which
the API answers as a problem document (api.problems) and the CLI prints (api.cli_catalog). No route handler is
called from the CLI, and no function here knows about HTTP.

- catalog: creators, products, scripts, channels and their destinations, shows;
- consents: agencies, code phrases, the creator's script approvals and claim attestations;
- accounts: accounts an admin gives;
- voiceovers: script edits, voice-over approvals and each avatar's voice.
"""
