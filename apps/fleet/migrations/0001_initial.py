# Drain and FleetScenario move from the hosts app to the fleet app. The tables stay where they
# are (hosts_drain, hosts_fleetscenario): only Django's idea of which app holds them changes.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('hosts', '0007_alter_host_volume_root'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Drain',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('state', models.CharField(choices=[('running', 'Draining'), ('done', 'Empty'), ('failed', 'Stopped on an error'), ('cancelled', 'Cancelled')], default='running', max_length=20)),
                        ('total', models.PositiveIntegerField(default=0)),
                        ('done', models.PositiveIntegerField(default=0)),
                        ('current', models.CharField(blank=True, help_text='The move under way', max_length=300)),
                        ('log', models.TextField(blank=True)),
                        ('error', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('host', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='drains', to='hosts.host')),
                        ('started_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'hosts_drain',
                        'ordering': ['-created_at', '-id'],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('state', 'running')), fields=('host',), name='one_drain_at_a_time')],
                    },
                ),
        migrations.CreateModel(
                    name='FleetScenario',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=80, unique=True)),
                        ('description', models.CharField(blank=True, max_length=300)),
                        ('hosts', models.JSONField(default=list)),
                        ('items', models.JSONField(default=list)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'db_table': 'hosts_fleetscenario',
                        'ordering': ['name'],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
