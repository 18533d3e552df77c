# Boots the firmware like the board (and the emulator's emuboot) does: import main, call main().
# Run as the script so this directory (with the machine/board/frontend shims) is searched first.
import main

main.main()
