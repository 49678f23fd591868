"""Provider adapters: one module per wire format; `registry` discovers them."""
