"""Clean-up shared by backend tests: what a test made goes, whether or not it got that far."""
import pylxd


def delete_instances_and_image(client, names, image):
    """Delete the named instances, then the image they came from.

    Only the instances that exist: a test may fail before it makes them all.
    """
    for name in names:
        try:
            client.instances.get(name).delete(wait=True)
        except pylxd.exceptions.NotFound:
            pass
    image.delete(wait=True)
