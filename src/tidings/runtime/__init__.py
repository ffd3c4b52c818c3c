"""The running engine: intake → processor (decide) → broker → dispatcher, wired by ``service``."""
