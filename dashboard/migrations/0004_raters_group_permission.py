from django.contrib.auth.management import create_permissions
from django.db import migrations


def give_raters_the_rating_permission(apps, schema_editor):
    """Rating is Django's add_rating permission, held by the raters group."""
    create_permissions(apps.get_app_config("dashboard"), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="raters")
    group.permissions.add(Permission.objects.get(content_type__app_label="dashboard", codename="add_rating"))


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0003_one_open_lease_per_rater"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(give_raters_the_rating_permission, migrations.RunPython.noop, elidable=True),
    ]
