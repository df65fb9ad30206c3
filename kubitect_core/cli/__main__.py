from kubitect_core.cli import main

main()
