"""Alliance-wide member identities and the links merchants hold to them."""
