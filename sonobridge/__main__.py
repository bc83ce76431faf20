from sonobridge.cli import main

main()
