"""The decision: who hears about an event, on which channels, when — pure code, no I/O."""
