from sonobridge.app.cli.main import main

main()
