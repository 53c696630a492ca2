"""Use cases: what one call does, in domain terms, between its servicer and the parts below.

A servicer converts its proto request, calls one function here and converts
the result back; the function orchestrates the store, the channel registry
and the domain rules, and knows nothing of protos or transports.
"""
