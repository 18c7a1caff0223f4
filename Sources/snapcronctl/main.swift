print("snapcronctl")
