from potatura.cli import main

main()
