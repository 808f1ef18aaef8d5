"""The embedded stack on one machine (`studio up`: embedded) and the demo that airs synthetic creators on it
(`studio demo`: demo)."""
