"""Earning rules: how many points a purchase or an event earns, and why.

``engine`` is a pure function from a purchase, the rules in force and facts about the member
to points and an explanation; ``service`` stores rules (versioned, effective-dated) and loads
the ones in force.
"""
