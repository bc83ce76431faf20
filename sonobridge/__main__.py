from sonobridge.app.cli.main import main

if __name__ == "__main__":  # not when a spawned process (the audit writer) imports it
    main()
