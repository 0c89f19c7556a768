"""deploy: bundles for a board, the board agent, the host client and the emulated board."""
