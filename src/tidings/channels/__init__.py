"""Channel providers: one file per provider, all behind :class:`tidings.channels.base.Provider`."""
