"""Targeted offers: an earning rule restricted to one of a merchant's customer segments, with the
title and text the segment's members see in the member app, and its results afterwards.

``service`` creates, lists and withdraws offers and reads the offers made to a member;
``results`` measures an offer from the ledger.
"""
